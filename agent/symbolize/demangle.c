/* C++ demangling through libstdc++'s __cxa_demangle (see demangle.h). Declared here rather than
 * through <cxxabi.h>, which is C++ only; the function has C linkage. */
#include "symbolize/demangle.h"

#include <stdlib.h>
#include <string.h>

char *__cxa_demangle(const char *mangled_name, char *output_buffer, size_t *length, int *status);

bool demangle__is_mangled(const char *name)
{
	return name && name[0] == '_' && name[1] == 'Z';
}

char *demangle__cxx(const char *name)
{
	int status = 0;
	char *readable;

	if (!demangle__is_mangled(name))
		return NULL;
	readable = __cxa_demangle(name, NULL, NULL, &status);
	if (status != 0 || !readable || !*readable) {
		free(readable);
		return NULL;
	}
	return readable;
}
