# The system libraries takod links (Debian's -dev packages, found with pkg-config): one list
# for the main build and the fuzz harnesses' (tests/fuzz), which is a project of its own.
find_package(PkgConfig REQUIRED)
pkg_check_modules(LIBEVENT REQUIRED IMPORTED_TARGET libevent)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(LIBPQ REQUIRED IMPORTED_TARGET libpq)
pkg_check_modules(LIBCURL REQUIRED IMPORTED_TARGET libcurl)
# the OCI backend compiles the seccomp profile to BPF once (sandbox_oci.c)
pkg_check_modules(LIBSECCOMP REQUIRED IMPORTED_TARGET libseccomp)
find_package(OpenSSL REQUIRED COMPONENTS Crypto)
