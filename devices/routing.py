# Websocket routes; the live twin-events issue adds the module event stream here.
websocket_urlpatterns: list = []
