"""A local control plane (etcd + kube-apiserver + kube-controller-manager) on loopback, the way
controller-runtime's envtest runs one: used by the tests and by ``entitle dev up``."""
