"""`iqart`'s exit codes, and which exceptions are the user's to fix (exit 2, one line) rather
than a bug in iqart (exit 70, with its traceback).

A scripted pipeline retries or fixes its command line on 2 and reports a bug on 70; mapping
every ValueError or OSError to 2 would make a bug read as a usage error. An exception is the
user's when it is one of USER_ERRORS, when it is a ValueError (or an ImportError naming an
optional extra) raised by a module that checks what the user gave (CHECKING_MODULES: scorer
and backend arguments, path lists, configuration files, dataset folders; judged by the innermost
frame, so one raised inside NumPy, ONNX Runtime or another library is not the user's), or when it
is an OSError about a path the command line names (or a file in a folder it names).
"""

from __future__ import annotations

import os
import types

from iqart.engine.backends.plan_cache import PlanMismatchError
from iqart.engine.backends.tensorrt_import import TensorRTUnavailableError
from iqart.engine.cli.usage import UsageError
from iqart.engine.results.journal import OutputInUseError
from iqart.engine.results.output import OutputError
from iqart.train.data.datasets import DatasetLayoutError
from iqart.train.models.checkpoints import CheckpointError
from iqart.train.models.zoo import MissingWeightsError

OK = 0
FAILED = 1  # the command ran, but its result is a failure: nothing scored, a parity check failed
USAGE = 2  # the command line asks for something iqart cannot do: nothing (or nothing more) was done
SOFTWARE = 70  # sysexits.h EX_SOFTWARE: an error iqart did not expect; the traceback says where
SIGNAL_BASE = 128  # stopped by signal N: 128 + N (130 SIGINT, 143 SIGTERM, 129 SIGHUP)

EPILOG = f"""exit codes:
  {OK}    success (score: at least one image in the output has a score)
  {FAILED}    the command ran but failed: no image scored, a parity check failed, nothing measured
  {USAGE}    usage error: a bad option, a path that does not exist, missing weights, an output
       that cannot be written or resumed, TensorRT unavailable; one line says which
  {SOFTWARE}   internal error (a bug in iqart, or a failure under it such as a full disk): traceback
  128+N stopped by signal N (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP); --resume finishes the run"""

USER_ERRORS = (
    UsageError,
    MissingWeightsError,
    PlanMismatchError,
    TensorRTUnavailableError,
    CheckpointError,
    OutputError,
    OutputInUseError,
    DatasetLayoutError,
)

CHECKING_MODULES = (
    "iqart.engine.scorer",  # Scorer's argument checks
    "iqart.engine.backends.",  # device, precision and profile checks of each backend
    "iqart.engine.pipeline.jobs",
    "iqart.engine.pipeline.path_lists",  # --pairs and --paths-from files
    "iqart.engine.pipeline.gpu_decode",
    "iqart.engine.pipeline.batch_scoring",  # --decode-device, -j, --decode-timeout
    "iqart.engine.results.",  # result files read back (--resume, `iqart report`), report formats
    "iqart.export.quality_images",
    "iqart.export.spec_files",  # --calibration/--parity sources, artifact folders
    "iqart.train.cli",
    "iqart.train.config",
    "iqart.train.runs",
    "iqart.train.models.zoo",
    "iqart.train.data.datasets",
    "iqart.train.data.pristine",
    "iqart.train.train_qualiclip",
    "iqart.train.train_bpclip",  # training configurations
)


def raised_in(exc: BaseException) -> str:
    """The module whose code raised `exc` (the innermost frame of its traceback)."""
    tb: types.TracebackType | None = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_globals.get("__name__", "")


def names_a_given_path(exc: OSError, argv: list[str]) -> bool:
    """Whether `exc` is about a path on the command line, a file inside a folder named there, or
    a folder above a named path (an output that cannot be made)."""
    given = set()
    for token in argv:
        value = token.partition("=")[2] if token.startswith("--") and "=" in token else token
        if value and not value.startswith("-"):
            given.add(os.path.abspath(value))
    for name in (exc.filename, exc.filename2):
        if name is None or isinstance(name, int):
            continue
        path = os.path.abspath(os.fsdecode(name))
        for named in given:
            if path == named or path.startswith(named + os.sep) or named.startswith(path + os.sep):
                return True
            folder, base = os.path.split(named)
            if os.path.dirname(path) == folder and base in os.path.basename(path):  # its temporary file
                return True
    return False


def is_users(exc: BaseException, argv: list[str]) -> bool:
    """Whether `exc` reports something the user can fix from the command line (see the module docstring)."""
    if isinstance(exc, USER_ERRORS):
        return True
    if isinstance(exc, (ValueError, ImportError)):
        return raised_in(exc).startswith(CHECKING_MODULES)
    if isinstance(exc, OSError):
        return names_a_given_path(exc, argv)
    return False
