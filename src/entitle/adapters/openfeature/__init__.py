"""The OpenFeature Remote Evaluation Protocol (OFREP) endpoint: entitlements as flags."""
