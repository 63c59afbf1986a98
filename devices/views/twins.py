from .devices import _todo

twin_json = twin_form = _todo
