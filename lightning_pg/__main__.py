import gc

# Importing torch and Lightning (~2,000 modules) builds ~300,000 objects that live as long as the process.
# With the cyclic GC on, its passes over them during the import freed nothing (a gc.collect() after it finds
# 0) yet took a tenth of the start-up (README); frozen afterwards, no later collection walks them again.
gc.disable()
from lightning_pg.cli import main  # noqa: E402

gc.freeze()
gc.enable()
main()
