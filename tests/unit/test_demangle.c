/* Unit tests for symbolize/demangle: C++ names as g++ prints them, Rust legacy and v0 names as
 * rustfilt prints them (no hash, no crate disambiguator), and names that are not mangled,
 * truncated or garbage left to the caller (NULL) without a crash. The Rust names are real
 * ones, taken from binaries rustc 1.95 built (-O -g, and -C symbol-mangling-version=v0). */
#include <stdlib.h>
#include <string.h>

#include "symbolize/demangle.h"
#include "unit.h"

struct pair {
	const char *mangled, *readable;
};

static void check_pairs(const struct pair *pairs, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		char *s = demangle__readable(pairs[i].mangled);

		CHECK_STR(s, pairs[i].readable);
		free(s);
	}
}

static void test_cxx(void)
{
	static const struct pair pairs[] = {
	    {"_ZN2ns1fEi", "ns::f(int)"},
	    {"_ZN2ns1fEd.cold", "ns::f(double) [clone .cold]"},
	    {"_ZN8workload10new_ordersEl", "workload::new_orders(long)"},
	    {"_ZNSt6vectorIiSaIiEE17_M_realloc_insertIJRKiEEEvN9__gnu_cxx17__normal_iterator"
	     "IPiS1_EEDpOT_",
	     "void std::vector<int, std::allocator<int> >::_M_realloc_insert<int const&>("
	     "__gnu_cxx::__normal_iterator<int*, std::vector<int, std::allocator<int> > >, "
	     "int const&)"},
	    {"_Znwm", "operator new(unsigned long)"},
	};

	check_pairs(pairs, sizeof(pairs) / sizeof(pairs[0]));
	CHECK(demangle__is_mangled("_ZN2ns1fEi") && !demangle__is_mangled("_start"));
}

static void test_rust_legacy(void)
{
	static const struct pair pairs[] = {
	    /* The names issue 13 found with their hashes. */
	    {"_ZN8fidelity4site17h2e634dc0ba2f213cE", "fidelity::site"},
	    {"_ZN5alloc7raw_vec20RawVecInner$LT$A$GT$11finish_grow17h1bb2275a589ef91bE",
	     "alloc::raw_vec::RawVecInner<A>::finish_grow"},
	    {"_ZN2rs15Ledger$LT$T$GT$6record17h5fab9c85a7616ae2E", "rs::Ledger<T>::record"},
	    {"_ZN2rs4main28_$u7b$$u7b$closure$u7d$$u7d$17he7a6fef77074ee27E",
	     "rs::main::{{closure}}"},
	    /* LLVM's suffix for a function it made local goes, as rustfilt drops it. */
	    {"_ZN8fidelity4site17h2e634dc0ba2f213cE.llvm.1234567890", "fidelity::site"},
	};

	check_pairs(pairs, sizeof(pairs) / sizeof(pairs[0]));
}

static void test_rust_v0(void)
{
	static const struct pair pairs[] = {
	    {"_RNvNtCsbFYJioi4cCO_2rs8fidelity4site", "rs::fidelity::site"},
	    /* An inherent method of a generic type, instantiated. */
	    {"_RNvMCsbFYJioi4cCO_2rsINtB2_6LedgeryE6recordB2_", "<rs::Ledger<u64>>::record"},
	    /* A generic function instantiated with a closure. */
	    {"_RINvCsbFYJioi4cCO_2rs4eachNCNvB2_4main0EB2_", "rs::each::<rs::main::{closure#0}>"},
	    {"_RNCNvNtNtNtCsjrHSEGnQ3l9_3std3sys11personality3gcc14find_eh_action0B9_",
	     "std::sys::personality::gcc::find_eh_action::{closure#0}"},
	    /* Backreferences into other crates' paths (the standard library is v0 too). */
	    {"_RNvMs3_NtCslNYArtu3iFV_5alloc7raw_vecINtB5_6RawVecNtNtNtNtCsjrHSEGnQ3l9_3std12"
	     "backtrace_rs9symbolize5gimli7LibraryE8grow_oneBU_",
	     "<alloc::raw_vec::RawVec<std::backtrace_rs::symbolize::gimli::Library>>::grow_one"},
	    {"_RNvXs2_NtNtCsjrHSEGnQ3l9_3std12backtrace_rs9symbolizeNtB5_10SymbolNameNtNtCsgEmfK2I"
	     "1SDS_4core3fmt7Display3fmt",
	     "<std::backtrace_rs::symbolize::SymbolName as core::fmt::Display>::fmt"},
	};

	check_pairs(pairs, sizeof(pairs) / sizeof(pairs[0]));
	CHECK(demangle__is_mangled("_RNvCs1234_7mycrate3foo"));
}

static void test_not_mangled(void)
{
	CHECK(demangle__readable(NULL) == NULL);
	CHECK(demangle__readable("") == NULL);
	CHECK(demangle__readable("main") == NULL);
	CHECK(demangle__readable("_rjem_malloc") == NULL);
	CHECK(demangle__readable("__rust_alloc") == NULL);
	CHECK(demangle__readable("_Z") == NULL);
	CHECK(demangle__readable("_R") == NULL);
	CHECK(demangle__readable("_Znot a name") == NULL);
	CHECK(demangle__readable("_RNvC") == NULL);
	/* A v0 backreference to itself or forwards, and one out of range. */
	CHECK(demangle__readable("_RNvB0_") == NULL);
	CHECK(demangle__readable("_RNvNvB9_1a1b") == NULL);
}

/* Every prefix of every real name, and many mutations of them, come back as NULL or as a
 * string; the harness would die on a crash. Deterministic: the same inputs every run. */
static void test_truncated_and_garbage(void)
{
	static const char *const names[] = {
	    "_ZN5alloc7raw_vec20RawVecInner$LT$A$GT$11finish_grow17h1bb2275a589ef91bE",
	    "_RINvCsbFYJioi4cCO_2rs4eachNCNvB2_4main0EB2_",
	    "_RNvMs3_NtCslNYArtu3iFV_5alloc7raw_vecINtB5_6RawVecNtNtNtNtCsjrHSEGnQ3l9_3std12"
	    "backtrace_rs9symbolize5gimli7LibraryE8grow_oneBU_",
	    "_ZNSt6vectorIiSaIiEE17_M_realloc_insertIJRKiEEEvN9__gnu_cxx17__normal_iteratorIPiS1_"
	    "EEDpOT_",
	};
	static const char alphabet[] = "_0123456789ABCEGIKMNRSTXYZabcdehjkmnpstuvxyz$.";
	uint32_t seed = 12345;
	char buf[256];
	size_t i, len, k;
	int round;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		len = strlen(names[i]);
		for (k = 0; k < len; k++) {
			memcpy(buf, names[i], k);
			buf[k] = '\0';
			free(demangle__readable(buf));
		}
		for (round = 0; round < 3000; round++) {
			memcpy(buf, names[i], len + 1);
			for (k = 0; k < 4; k++) {
				seed = seed * 1103515245 + 12345;
				/* Keep the two-byte prefix so the demanglers do the work. */
				buf[2 + (seed >> 8) % (len - 2)] =
				    alphabet[(seed >> 20) % (sizeof(alphabet) - 1)];
			}
			free(demangle__readable(buf));
		}
	}
}

/* Names nested or repeated far beyond any real one: a recursion or stack limit answers, not
 * a crash; past DEMANGLE_MAX_NAME nothing is tried. */
static void test_hostile_sizes(void)
{
	static const char *const units[] = {"N", "INv", "B_", "P", "1a"};
	size_t size = DEMANGLE_MAX_NAME + 100, i, k;
	char *buf = malloc(size + 1);
	char *s;

	if (!buf) {
		CHECK(buf != NULL);
		return;
	}
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		size_t unit_len = strlen(units[i]);
		int zr;

		for (zr = 0; zr < 2; zr++) {
			buf[0] = '_';
			buf[1] = zr ? 'R' : 'Z';
			for (k = 2; k + unit_len < DEMANGLE_MAX_NAME - 1; k += unit_len)
				memcpy(buf + k, units[i], unit_len);
			buf[k++] = 'v';
			buf[k] = '\0';
			free(demangle__readable(buf));
		}
	}
	/* Valid but too long: left as it is. */
	memcpy(buf, "_ZN", 3);
	for (k = 3; k + 2 < size - 20; k += 2)
		memcpy(buf + k, "1a", 2);
	memcpy(buf + k, "17h0123456789abcdefE", 21);
	CHECK(strlen(buf) > DEMANGLE_MAX_NAME);
	CHECK(demangle__readable(buf) == NULL);
	/* The same shape just under the limit is demangled. */
	memcpy(buf + 3 + 2 * 100, "17h0123456789abcdefE", 21);
	s = demangle__readable(buf);
	CHECK(s && strncmp(s, "a::a::", 6) == 0);
	free(s);
	free(buf);
}

int main(void)
{
	RUN(test_cxx);
	RUN(test_rust_legacy);
	RUN(test_rust_v0);
	RUN(test_not_mangled);
	RUN(test_truncated_and_garbage);
	RUN(test_hostile_sizes);
	return unit_summary("demangle");
}
