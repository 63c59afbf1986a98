"""Step 2: connect as myFirstModule, print every desired-properties patch, report it back.

Leave it running while update_module_twin.py changes the twin; stop it with Ctrl-C.

The module's connection string is IOTHUB_MODULE_CONNECTION_STRING when set (e.g. copied from
the Azure portal); otherwise it is built from the module's key, read with the service
connection string.
"""

import json
import os
import signal
import threading

from azure.iot.device import IoTHubModuleClient

import hubconfig
from hubconfig import DEVICE_ID, MODULE_ID


def module_client() -> IoTHubModuleClient:
    connection_string = os.environ.get(hubconfig.MODULE_ENV, "").strip()
    if connection_string:
        return IoTHubModuleClient.create_from_connection_string(connection_string)
    hub = hubconfig.load()
    module = hub.registry_manager().get_module(DEVICE_ID, MODULE_ID)
    connection_string = hub.module_connection_string(
        DEVICE_ID, MODULE_ID, module.authentication.symmetric_key.primary_key
    )
    return IoTHubModuleClient.create_from_connection_string(
        connection_string, server_verification_cert=hub.ca_pem
    )


def stop_on_signals() -> threading.Event:
    """An event set by Ctrl-C (SIGINT) or SIGTERM, so that the client shuts down cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main() -> int:
    client = module_client()

    def desired_patch_received(patch):
        print(f"Desired properties patch: {json.dumps(patch)}", flush=True)
        if "telemetryInterval" in patch:
            reported = {"telemetryInterval": patch["telemetryInterval"]}
            client.patch_twin_reported_properties(reported)
            print(f"Reported properties patch: {json.dumps(reported)}", flush=True)

    try:
        client.connect()
        # Subscribes before returning, so no patch sent from now on is missed.
        client.on_twin_desired_properties_patch_received = desired_patch_received
        desired = client.get_twin()["desired"]
        print(f"Current desired properties: {json.dumps(desired)}")
        stop = stop_on_signals()
        print(f"Listening as {DEVICE_ID}/{MODULE_ID}; press Ctrl-C to stop.", flush=True)
        stop.wait()
    finally:
        client.shutdown()
    print("Stopped.", flush=True)
    return 0


if __name__ == "__main__":
    hubconfig.run(main)
