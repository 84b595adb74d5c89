"""taskiq broker, tasks, scheduling and delivery providers."""
