"""The CAM methods, one module each; importing this package registers all of them.

Adding a method is adding one module here: a :class:`~convlens.cam.core.CamMethod` subclass
decorated with :func:`~convlens.cam.core.register`.
"""

from importlib import import_module
from pkgutil import iter_modules

#: Registration order = the order of METHODS (gradient methods first, then the others).
_ORDER = ("gradcam", "gradcampp", "xgradcam", "layercam", "hirescam", "scorecam", "ablationcam",
          "eigencam")

for _name in sorted((m.name for m in iter_modules(__path__)),
                    key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n)):
    import_module(f"{__name__}.{_name}")
