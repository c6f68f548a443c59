"""Start the cockpit's Streamlit server so that it asks nothing of the internet (`make demo`).

``python -m ui.serve run app.py --server.port 8501 …`` is ``streamlit run …`` with one change:
Streamlit's look-up of the machine's external IP address is switched off. Streamlit (1.67) asks
``checkip.amazonaws.com`` for it when it prints its URLs while listening on every interface, and
again, blocking for up to two seconds, each time a browser opens a WebSocket from another origin
(the address would only be one more origin to allow). An offline or private deployment must make
neither request; listening on 127.0.0.1 (``.streamlit/config.toml``) avoids only the first.
"""

from __future__ import annotations

import sys


def _no_external_ip() -> None:
    """The external address is never looked up: None, as when the look-up fails."""
    return None


def offline() -> None:
    """Switch off Streamlit's external-IP look-up in this process (before the server starts)."""
    from streamlit import net_util

    net_util.get_external_ip = _no_external_ip


def main(argv: list[str] | None = None) -> int:
    """Run the Streamlit command line (``run app.py …``) with :func:`offline` applied."""
    offline()
    from streamlit.web import cli

    sys.argv = ["streamlit", *(sys.argv[1:] if argv is None else argv)]
    return cli.main() or 0


if __name__ == "__main__":
    sys.exit(main())
