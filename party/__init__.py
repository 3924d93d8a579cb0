"""Party node: turns local metrics into a protected vector and takes part in rounds."""
