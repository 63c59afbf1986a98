"""What an error report may show: never a secret, and the technical page only to this machine.

Django's debug page lists every setting, the request and each frame's local variables. Its
own filter hides settings named like API, KEY or TOKEN, and only when DEBUG is off; a hub
connection string (``…;SharedAccessKeyName=iothubowner;SharedAccessKey=…``) matches none of
those names. Here secrets are hidden by name and by what they look like, with DEBUG on too,
and only a signed-in staff user on loopback gets the technical page at all: anyone else
(an anonymous client, a remote one, one that sent a Host this site does not serve, as DNS
rebinding from a web page would) gets the plain error page whatever DEBUG says.
"""

import ipaddress
import re

from django.core.exceptions import DisallowedHost, SuspiciousOperation
from django.template.loader import render_to_string
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

HIDDEN = "********************"
# Names whose values are secret: Django's own list, plus what carries keys here.
SECRET_NAMES = re.compile(
    r"API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|CONNECTION_STRING|SESSION"
    r"|CSRF|\bcs\b|\bsas\b|\bsig\b",
    flags=re.I,
)
# Secrets by their shape, wherever they appear (a local variable's repr, an exception's
# message, HTML-escaped or not): connection-string keys, SAS signatures, URL passwords.
SECRET_TEXT = [
    (re.compile(r"(SharedAccessKey=)[^;\s\"'&<]+", re.I), rf"\g<1>{HIDDEN}"),
    (re.compile(r"((?:\b|&amp;)sig=)[^&;\s\"'<]+", re.I), rf"\g<1>{HIDDEN}"),
    # A URL's password may hold "/" unencoded; hiding a little more than it is harmless.
    (re.compile(r"(://[^/\s:@\"'<]*:)[^@\s\"'<]+@"), rf"\g<1>{HIDDEN}@"),
]


def scrub(text: str) -> str:
    for pattern, replacement in SECRET_TEXT:
        text = pattern.sub(replacement, text)
    return text


class SecretsFilter(SafeExceptionReporterFilter):
    hidden_settings = SECRET_NAMES

    def is_active(self, request):
        # Django's filter stands down when DEBUG is on; the debug page is exactly where a
        # key would be shown.
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if not isinstance(cleansed, str):
            return cleansed
        text = str(cleansed)  # a lazy string (some settings are) is no str to re.sub
        scrubbed = scrub(text)
        return cleansed if scrubbed == text else scrubbed

    def get_post_parameters(self, request):
        """POST fields named like secrets (primary_key, secondary_key, password) hidden
        even where a view did not mark them."""
        post = super().get_post_parameters(request)
        if not post:
            return post
        post = post.copy()
        for name in post:
            if SECRET_NAMES.search(name):
                post[name] = HIDDEN
        return post

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, self.cleanse_setting(name, value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def _from_loopback(request) -> bool:
    try:
        return ipaddress.ip_address(request.META.get("REMOTE_ADDR", "")).is_loopback
    except ValueError:
        return False


class LocalOnlyReporter(ExceptionReporter):
    """The technical page, scrubbed of secrets, for a developer on this machine; the
    plain error page for anyone else."""

    def _technical(self) -> bool:
        # A request refused before authentication (too big, a bad Host) has no user.
        user = getattr(self.request, "user", None)
        return (
            self.request is not None
            and _from_loopback(self.request)
            and not (self.exc_type and issubclass(self.exc_type, DisallowedHost))
            and user is not None
            and user.is_active
            and user.is_staff
        )

    def _plain_template(self) -> str:
        suspicious = self.exc_type and issubclass(self.exc_type, SuspiciousOperation)
        return "400.html" if suspicious else "500.html"

    def get_traceback_html(self):
        if not self._technical():
            return render_to_string(self._plain_template())
        return scrub(str(super().get_traceback_html()))

    def get_traceback_text(self):
        if not self._technical():
            return "Bad request.\n" if self._plain_template() == "400.html" else "Server error.\n"
        return scrub(str(super().get_traceback_text()))
