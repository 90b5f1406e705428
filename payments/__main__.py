"""``python -m payments``: the payment service (uvicorn, under custody.serving's guards)."""

from __future__ import annotations

from custody import obs
from custody.serving import ServiceLimits, serve
from payments.service import build
from payments.settings import PaymentsSettings


def main() -> None:
    settings = PaymentsSettings()
    obs.configure_logging("payments")
    app, _ = build(settings)
    serve(app, host=settings.host, port=settings.port, limits=ServiceLimits())


if __name__ == "__main__":
    main()
