/* C++ and Rust demangling (see demangle.h). Rust first: a legacy Rust name is also a valid
 * Itanium name, which __cxa_demangle would print with its hash and $-escapes
 * ("fidelity::site::h2e634dc0ba2f213c"); rust_demangle claims only names that end in Rust's
 * hash component, so a C++ name falls through to __cxa_demangle. __cxa_demangle is declared
 * here rather than through <cxxabi.h>, which is C++ only; the function has C linkage. */
#include "symbolize/demangle.h"

#include <stdlib.h>
#include <string.h>

#include <libiberty/demangle.h>

char *__cxa_demangle(const char *mangled_name, char *output_buffer, size_t *length, int *status);

bool demangle__is_mangled(const char *name)
{
	return name && name[0] == '_' && (name[1] == 'Z' || name[1] == 'R');
}

static char *demangle_cxx(const char *name)
{
	int status = 0;
	char *readable = __cxa_demangle(name, NULL, NULL, &status);

	if (status != 0 || !readable || !*readable) {
		free(readable);
		return NULL;
	}
	return readable;
}

char *demangle__readable(const char *name)
{
	char *readable;

	if (!demangle__is_mangled(name) || strnlen(name, DEMANGLE_MAX_NAME + 1) > DEMANGLE_MAX_NAME)
		return NULL;
	/* Without DMGL_VERBOSE the legacy hash and v0's crate disambiguators are left out. */
	readable = rust_demangle(name, DMGL_PARAMS | DMGL_ANSI);
	if (readable && !*readable) {
		free(readable);
		readable = NULL;
	}
	if (readable || name[1] == 'R')
		return readable;
	return demangle_cxx(name);
}
