"""Local stand-ins for the outside services Tidings talks to."""
