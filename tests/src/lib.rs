//! Shared harness for the end-to-end tests: locating the built binaries,
//! running real peers (OpenSSH client, init-sshd, kube-apiserver) in temp dirs.
