"""Run the Serve app with an encryption key on its own local Ray (a subprocess of the test).

Usage: python -m tests.security.encrypted_app <settings-json-file>
Prints ``READY <port>`` when the app answers, then serves until stdin closes.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> None:
    os.environ.pop("RAY_ADDRESS", None)
    settings_doc = json.loads(open(sys.argv[1]).read())
    port = int(settings_doc.pop("_port"))
    import requests
    from ray import serve

    import cognopt_ray
    from cognopt_ray.config import Settings
    from serve_apps.optimization_api import app_builder

    settings = Settings.load(**settings_doc)
    cognopt_ray.init(settings=settings, num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(app_builder({"settings": settings_doc}), name="cognopt-enc", route_prefix="/", blocking=False)
        deadline = time.time() + 180
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/api/v0/optimization/health", timeout=5).status_code < 600:
                    break
            except requests.RequestException:
                pass
            if time.time() > deadline:
                raise TimeoutError("the encrypted app did not start")
            time.sleep(0.3)
        print(f"READY {port}", flush=True)
        sys.stdin.read()  # serve until the test closes our stdin
    finally:
        try:
            serve.shutdown()
        finally:
            cognopt_ray.shutdown(kill_engines=True)


if __name__ == "__main__":
    main()
