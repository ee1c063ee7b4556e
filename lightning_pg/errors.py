"""User-facing errors: each message names the problem and the fix in one paragraph.

The CLI prints these without a traceback (set ``LIGHTNING_PG_DEBUG=1`` or pass ``--debug`` to see one);
any other exception is a bug in lightning_pg and keeps its traceback.
"""


class LightningPGError(Exception):
    """Base class for problems with the user's input or environment."""


class ConfigError(LightningPGError, ValueError):
    """An invalid hyperparameter, config file or checkpoint path."""


class EnvError(LightningPGError, RuntimeError):
    """The environment cannot be built, does not suit the algorithm, or misbehaved while running."""


class TrainingDiverged(LightningPGError, RuntimeError):
    """A loss or gradient became NaN or infinite; training stopped before saving anything."""


class StopRequested(BaseException):
    """Ctrl+C or SIGTERM ended the run without saving (asked twice, or no batch boundary came within the grace
    period). A BaseException, as KeyboardInterrupt is: an env's ``except Exception`` must not swallow it.
    ``signum`` gives the exit status (128 + signum), the message says which checkpoint stands."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
