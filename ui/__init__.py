"""Streamlit pages and widgets of the cockpit; they call twin/ and draw, nothing more."""
