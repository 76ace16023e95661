"""The bottom layer: facts every other layer needs and that need nothing above them.

Model references (`references`), architecture facts (`architecture`), dtypes, devices, files shipped in the
package (`resources`), the one user-facing error type (`errors`), seeded random numbers (`rng`) and the small
model packages ship (`assets`)."""
