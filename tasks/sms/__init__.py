"""SMS providers: one interface, Ronglian for production, the console for development."""
