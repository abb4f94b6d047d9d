"""Worker: hosts segments, runs them for sessions, streams activations onward."""
