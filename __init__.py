"""Not part of the package: what `import ffrun` finds when Python runs in the folder above a clone named `ffrun`.

Python looks in the current folder first, so there the clone's root would be imported as a namespace package
`ffrun` without any of ffrun's API (and would hide an editable install). This file makes it the real package:
ffrun's modules are taken from the clone's ffrun/ folder (and its configs from configs/), as an editable install
would take them."""

import os as _os

_root = _os.path.dirname(_os.path.abspath(__file__))
__path__ = [_os.path.join(_root, "ffrun"), _root]  # ffrun.<module>, then ffrun.configs (configs/ at the root)
__file__ = _os.path.join(__path__[0], "__init__.py")
with open(__file__, encoding="utf-8") as _f:
    exec(compile(_f.read(), __file__, "exec"))
del _f, _os, _root
