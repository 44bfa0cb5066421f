"""PyTorch files as artifacts (``.pt2``, TorchScript): verified and timed in eager torch.

- adapter: the formats' records, registered in compress.backends; session: the model run in eager torch.
"""
