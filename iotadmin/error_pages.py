"""The 404 page says what our views said was missing, never Django's internals."""

from django.shortcuts import render
from django.urls import Resolver404


def not_found(request, exception):
    """An ``Http404("There is no 'tertiary' key…")`` from a view shows its message; a URL
    that matches no route (an id IoT Hub would refuse, "..") shows the generic one."""
    message = ""
    if not isinstance(exception, Resolver404) and exception.args:
        message = exception.args[0] if isinstance(exception.args[0], str) else ""
    return render(request, "404.html", {"message": message}, status=404)
