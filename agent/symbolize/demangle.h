/* Readable C++ names. Symbol tables and DWARF linkage names carry the Itanium ABI's mangled
 * form ("_ZN2ns1fEi"); people read "ns::f(int)". The demangler is libstdc++'s __cxa_demangle,
 * the one g++ itself ships, so it follows every construct the compiler emits, including clone
 * suffixes such as ".cold" or ".constprop.0" ("f(int) [clone .cold]"). Link with -lstdc++. */
#ifndef ALLOCSCOPE_SYMBOLIZE_DEMANGLE_H
#define ALLOCSCOPE_SYMBOLIZE_DEMANGLE_H

#include <stdbool.h>

/* True when name looks like an Itanium-mangled name ("_Z..."). */
bool demangle__is_mangled(const char *name);

/* The demangled form of name, malloc'd (the caller frees it). NULL when name is not mangled,
 * cannot be demangled (then the mangled name is the best there is) or memory ran out. */
char *demangle__cxx(const char *name);

#endif
