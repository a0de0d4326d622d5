"""Write the gate into a package's own CI: DEP-8 (autopkgtest) for Debian, tmt/fmf for
Fedora. Both run ``verifier verify --binary`` against the memcached the package built."""
