"""Settings and logging shared by every Tidings process."""
