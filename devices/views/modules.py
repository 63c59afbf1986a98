from .devices import _todo

module_create = module_detail = module_delete = _todo
module_regenerate_key = module_connection_string = _todo
