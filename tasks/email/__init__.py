"""Email rendering and sending."""
