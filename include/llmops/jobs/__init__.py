"""What every job process shares (training, evaluation): how it starts (``entry``), reads its config
(``config``), stages inputs and outputs between the lake and the local disk (``staging``), loads
models and data the same way (``runtime``), hashes and writes atomically (``artifacts``), and
reports its result (``results``). Launchers run jobs; the orchestrator reads their results.
"""
