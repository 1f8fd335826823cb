"""Studio datasets: loading, validation and the bundled samples."""
