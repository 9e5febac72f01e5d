"""What every job process shares (training, evaluation): how it starts, stops and reports."""
