"""The platform package, which is also the standard library's ``platform`` module.

Why: ``platform`` is a standard-library module that torch, ray, uuid and pandas import
(``platform.system()``, ``platform.machine()``...). Because this package is found first on
``sys.path`` (``python -m platform.run`` from the repo root, ``PYTHONPATH`` on Ray workers), it
would shadow the standard module and break them. So before anything else it executes the standard
library's ``platform.py`` into this package's namespace: the package is a strict superset of it.
Keep everything else out of this file.

Used by every command, e.g. ``python -m platform.run asl``.
"""

import os as _os
import sysconfig as _sysconfig

_package_doc = __doc__

_stdlib_platform = _os.path.join(_sysconfig.get_paths()["stdlib"], "platform.py")
with open(_stdlib_platform, encoding="utf-8") as _source:
    exec(compile(_source.read(), _stdlib_platform, "exec"))
__doc__ = _package_doc
