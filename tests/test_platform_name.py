"""The ``platform`` package is a superset of the standard library's ``platform`` module.

.venv/bin/python -m pytest tests/test_platform_name.py
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from helpers import REPO


def test_driver_sees_both_the_package_and_the_standard_module():
    import platform

    assert Path(platform.__file__).resolve() == REPO / "platform" / "__init__.py"
    assert platform.system() == "Linux" and platform.python_version().startswith("3.")
    from platform import config  # noqa: F401 - a submodule imports as from a package


def test_libraries_that_import_platform_still_work_from_the_repo_root():
    code = "import platform, uuid, pandas, torch, ray; print(platform.system(), platform.machine())"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "Linux"


def test_the_package_keeps_the_standard_module_api():
    import platform

    stdlib_source = Path(sysconfig.get_paths()["stdlib"]) / "platform.py"
    public = [line.split("(")[0][4:] for line in stdlib_source.read_text().splitlines() if line.startswith("def ")]
    missing = [name for name in public if not name.startswith("_") and not hasattr(platform, name)]
    assert not missing


def test_a_ray_worker_imports_platform_modules_and_the_standard_api(ray_address):
    import ray

    @ray.remote
    def inside_worker():
        import platform
        from platform.train import loop

        return platform.system(), platform.__file__, loop.__name__

    system, location, module = ray.get(inside_worker.remote())
    assert system == "Linux" and module == "platform.train.loop"
    assert Path(location).resolve() == REPO / "platform" / "__init__.py"
