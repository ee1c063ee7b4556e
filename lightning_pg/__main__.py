from lightning_pg.cli import main

main()
