"""The Ray stages of synthmatch: dataset generation (Ray Data) and, later, training."""
