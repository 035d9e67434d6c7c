"""Tables, plots and the HTML report of benchmark runs."""
