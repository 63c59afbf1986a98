from django.http import HttpResponse


def _todo(request, *args, **kwargs):
    return HttpResponse("not built yet", status=501)


device_list = device_create = device_detail = device_status = _todo
device_regenerate_key = device_delete = device_connection_string = _todo
