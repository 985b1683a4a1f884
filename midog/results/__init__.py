"""What is made of a result file: viewer exports, the count, the overlay and the review page."""
