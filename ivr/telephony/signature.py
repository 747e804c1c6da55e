"""Checking ``X-Twilio-Signature`` on webhooks and on the media WebSocket upgrade."""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator, get_signature_algorithm


class SignatureChecker:
    """Wraps :class:`twilio.request_validator.RequestValidator` for one auth token.

    Twilio signs the URL it requested: for webhooks the public ``https://`` URL plus the form fields; for the
    media stream the exact ``wss://`` URL written in our TwiML, with no fields. Both URLs are rebuilt from
    ``IVR_PUBLIC_URL``, never from the ``Host`` header, which a proxy may have rewritten.
    """

    def __init__(self, auth_token: str) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None

    @property
    def configured(self) -> bool:
        return self._validator is not None

    def valid(
        self,
        url: str,
        params: Mapping[str, str] | dict[str, str],
        signature: str | None,
        settings_header: str | None = None,
    ) -> bool:
        if self._validator is None or not signature:
            return False
        try:
            algorithm = get_signature_algorithm(settings_header) if settings_header else None
            return bool(self._validator.validate(url, params, signature, algorithm=algorithm))
        except ValueError:
            return False
