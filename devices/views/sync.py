from .devices import _todo

sync = _todo
