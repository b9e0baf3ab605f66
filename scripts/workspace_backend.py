"""The build backend of the repository's root, which is a workspace, not a distribution.

`pip install .` or `pip install -e '.[dev]'` at the root would otherwise build something
meaningless (or fail on setuptools' flat-layout discovery); this says what to run instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

MESSAGE = (
    "appforge's root is a workspace of six distributions, not a package. Install them with:\n"
    "  pip install -r requirements-dev.txt     # editable, with the dev tools (what make does)\n"
    "  pip install -r requirements.txt         # editable\n"
    "  pip install ./libs/api ./services/common ./services/chat ./services/builder \\\n"
    "              ./services/deployer './cli[all]'   # a regular install\n"
)


def _refuse(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise SystemExit(MESSAGE)


get_requires_for_build_wheel = _refuse
get_requires_for_build_editable = _refuse
get_requires_for_build_sdist = _refuse
prepare_metadata_for_build_wheel = _refuse
prepare_metadata_for_build_editable = _refuse
build_wheel = _refuse
build_editable = _refuse
build_sdist = _refuse
