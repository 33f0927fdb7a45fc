/* Readable C++ and Rust names. Symbol tables and DWARF linkage names carry mangled forms:
 * C++'s Itanium ABI ("_ZN2ns1fEi": "ns::f(int)"), Rust's legacy form, which is Itanium-shaped
 * with a hash as the last component ("_ZN8fidelity4site17h2e634dc0ba2f213cE":
 * "fidelity::site"), and Rust's v0 form ("_RNvCs1234_7mycrate3foo": "mycrate::foo").
 *
 * Rust names go through libiberty's rust_demangle (binutils' and gdb's demangler, both forms;
 * the hash and v0's crate disambiguators are dropped as rustfilt drops them). C++ names go
 * through libstdc++'s __cxa_demangle, the one g++ itself ships, so it follows every construct
 * the compiler emits, including clone suffixes such as ".cold" or ".constprop.0"
 * ("f(int) [clone .cold]"). docs/design.md says why two. Link with -liberty -lstdc++. */
#ifndef ALLOCSCOPE_SYMBOLIZE_DEMANGLE_H
#define ALLOCSCOPE_SYMBOLIZE_DEMANGLE_H

#include <stdbool.h>

/* Names longer than this are left mangled: the C++ demangler keeps per-character work arrays
 * on the stack (about 70 bytes a character), and a name in a target's file is input nobody
 * checked. Real names stay well below it (the longest in libLLVM: 554 characters). */
#define DEMANGLE_MAX_NAME 16384

/* True when name looks mangled: Itanium ("_Z...", also Rust legacy) or Rust v0 ("_R..."). */
bool demangle__is_mangled(const char *name);

/* The demangled form of name, malloc'd (the caller frees it). NULL when name is not mangled,
 * cannot be demangled (then the mangled name is the best there is), is longer than
 * DEMANGLE_MAX_NAME, or memory ran out. */
char *demangle__readable(const char *name);

#endif
