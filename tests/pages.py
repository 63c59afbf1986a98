"""Reading Django test-client responses the way an operator reads the page."""

import html
import re

from django.contrib.messages import get_messages
from django.urls import reverse


def url(name, *args):
    return reverse(f"devices:{name}", args=args)


def text(response) -> str:
    """The page's HTML with entities decoded, so ids like a'b match as typed."""
    return html.unescape(response.content.decode())


def etag_on(response) -> str:
    """The etag a page's form carries (what the operator saw)."""
    return re.search(r'name="etag" value="([^"]*)"', response.content.decode())[1]


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]
