"""One module per real dataset source (the synthetic corpus lives in ``ingest.synthetic``)."""
