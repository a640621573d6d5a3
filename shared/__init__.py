"""The app's domain logic: plain Python, testable without the Functions runtime."""
