"""What every job shares: configuration, the SparkSession factory, paths, logging."""
