/* libFuzzer harness: the spool file reader (export/spool.c's spool__decode, what
 * spool__read applies to a file after a restart). The CRC-32 at offset 8 would stop nearly
 * every mutation at the door, so the harness writes the right one into a copy of the input
 * before decoding, except when the input's CRC field is all ones (then it stays as is and
 * must be refused unless it happens to be right). What decodes must encode back to the
 * same bytes: the format has one spelling for each profile. */
#include <zlib.h>

#include "fuzz.h"
#include "export/spool.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct queued_profile *profile = NULL;
	uint8_t *file = malloc(size ? size : 1), *again = NULL;
	size_t again_len = 0;
	int ret;

	if (!file)
		return 0;
	memcpy(file, data, size);
	if (size >= 12 && memcmp(file + 8, "\xff\xff\xff\xff", 4) != 0) {
		uint32_t crc = (uint32_t)crc32(crc32(0L, Z_NULL, 0), file + 12, (uInt)(size - 12));

		for (int i = 0; i < 4; i++)
			file[8 + i] = (uint8_t)(crc >> (8 * i));
	}
	ret = spool__decode(file, size, &profile);
	if (ret == 0) {
		if (spool__encode(profile, &again, &again_len) != 0)
			abort();
		if (again_len != size || memcmp(again, file, size) != 0) {
			fprintf(stderr, "a decoded spool file encodes to other bytes (%zu, was %zu)\n",
				again_len, size);
			abort();
		}
	} else if (ret != -EBADMSG && ret != -ENOMEM) {
		fprintf(stderr, "spool__decode returned %d\n", ret);
		abort();
	}
	free(again);
	free(profile);
	free(file);
	return 0;
}
