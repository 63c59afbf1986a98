from django.contrib import messages
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from django_htmx.http import HttpResponseClientRedirect

from .. import access, hub, mirror

# Viewers read; a sync only reads the hub, but it queries every twin there and rewrites the
# mirror every user sees, so it is for operators and admins, like the other writes.
WHY = "Syncing the dashboard with the hub is for operators and admins; viewers can only read."


@access.requires()
@require_POST
def sync(request):
    if access.role_of(request.user) == access.VIEWER:
        return render(request, "403.html", {"reason": WHY}, status=403)
    try:
        result = mirror.sync_hub()
    except hub.HubError as error:
        messages.error(request, f"Sync failed: {error.message}")
    else:
        messages.success(request, f"Synced with the hub: {result.summary()}.")
    back = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        back = reverse("devices:device-list")
    if request.htmx:
        return HttpResponseClientRedirect(back)  # a full page load shows the message
    return redirect(back)
