/*
 * Unit tests: the restricted unpickler on hand-written protocol 2 streams,
 * including inputs built to exhaust memory or time.
 */
#include <stdlib.h>
#include <string.h>

#include "tap.h"
#include "checkpoint/tl_checkpoint.h"
#include "checkpoint/tl_checkpoint_internal.h"

static tl_code
load(const uint8_t *data, size_t len, pk_obj **root, tl_pickle **arena, tl_error *err)
{
	return tl_pickle_load(data, len, NULL, arena, root, NULL, err);
}

#define LOAD(lit, root, arena, err) load((const uint8_t *) (lit), sizeof(lit) - 1, root, arena, err)

static void
test_values(void)
{
	tl_pickle  *arena = NULL;
	pk_obj	   *root = NULL;
	tl_error	err;

	/* (1, -2, 70000, -1 as LONG1, 2**40 as LONG1, True, None, 'é') */
	is_int(LOAD("\x80\x02(K\x01J\xfe\xff\xff\xffJp\x11\x01\x00\x8a\x01\xff\x8a\x06\x00\x00\x00\x00\x00\x01\x88NX\x02\x00\x00\x00\xc3\xa9t.",
				&root, &arena, &err), TL_OK, "a tuple of scalars reads: %s", err.message);
	if (root && root->kind == PK_TUPLE && root->n == 8)
	{
		ok(root->items[0]->ival == 1 && root->items[1]->ival == -2 && root->items[2]->ival == 70000,
		   "BININT1, negative BININT, BININT");
		ok(root->items[3]->ival == -1, "LONG1 sign-extends");
		ok(root->items[4]->ival == (INT64_C(1) << 40), "LONG1 of 6 bytes");
		ok(root->items[5]->kind == PK_BOOL && root->items[5]->ival == 1 && root->items[6]->kind == PK_NONE,
		   "NEWTRUE and NONE");
		ok(root->items[7]->kind == PK_STR && strcmp(root->items[7]->str, "\xc3\xa9") == 0, "BINUNICODE");
	}
	else
		ok(0, "root is an 8-tuple");
	tl_pickle_free(arena);

	/* memo: [x, x] where x = [] via BINPUT/BINGET, then APPENDS */
	is_int(LOAD("\x80\x02]q\x00(]q\x01h\x01" "e.", &root, &arena, &err), TL_OK, "memo and APPENDS: %s", err.message);
	ok(root && root->kind == PK_LIST && root->n == 2 && root->items[0] == root->items[1],
	   "BINGET gives the same object, not a copy");
	tl_pickle_free(arena);

	/* a list that contains itself is harmless: nothing walks the graph */
	is_int(LOAD("\x80\x02]q\x00h\x00" "a.", &root, &arena, &err), TL_OK, "self-containing list");
	tl_pickle_free(arena);
}

static void
test_refusals(void)
{
	tl_pickle  *arena = NULL;
	pk_obj	   *root = NULL;
	tl_error	err;

	is_int(LOAD("\x80\x02" "cos\nsystem\n.", &root, &arena, &err), TL_E_FORBIDDEN, "os.system");
	ok(strstr(err.message, "pickle global \"os.system\" is not allowed") != NULL, "names it: %s", err.message);
	ok(arena == NULL && root == NULL, "nothing handed back");
	is_int(LOAD("\x80\x02" "cnt\nsystem\n.", &root, &arena, &err), TL_E_FORBIDDEN, "nt.system");
	is_int(LOAD("\x80\x02" "ctorch\nload\n.", &root, &arena, &err), TL_E_FORBIDDEN, "torch.load");
	is_int(LOAD("\x80\x02" "ccollections\nOrderedDict \n.", &root, &arena, &err), TL_E_FORBIDDEN,
		   "a near-miss name");
	is_int(LOAD("\x80\x02" "ctorch._utils\n_rebuild_tensor_v2\nK\x01\x85R.", &root, &arena, &err), TL_E_CORRUPT,
		   "_rebuild_tensor_v2 with bad arguments");
	is_int(LOAD("\x80\x02" "ccollections\nOrderedDict\n)R}b.", &root, &arena, &err), TL_OK,
		   "BUILD of an OrderedDict (torch's _metadata) is accepted");
	tl_pickle_free(arena);
	is_int(LOAD("\x80\x02]}b.", &root, &arena, &err), TL_E_UNSUPPORTED, "BUILD of anything else");
	is_int(LOAD("\x80\x02" "c__builtin__\ngetattr\n.", &root, &arena, &err), TL_E_FORBIDDEN, "getattr");
	is_int(LOAD("\x80\x02N\x81.", &root, &arena, &err), TL_E_UNSUPPORTED, "NEWOBJ opcode");
	is_int(LOAD("\x80\x02Vabc\n.", &root, &arena, &err), TL_E_UNSUPPORTED, "text-mode UNICODE opcode");
	is_int(LOAD("\x80\x03N.", &root, &arena, &err), TL_E_UNSUPPORTED, "protocol 3");
	is_int(LOAD("\x80\x02NN.", &root, &arena, &err), TL_E_CORRUPT, "two objects at STOP");
	is_int(LOAD("\x80\x02(N.", &root, &arena, &err), TL_E_CORRUPT, "open MARK at STOP");
	is_int(LOAD("\x80\x02X\xff\xff\xff\xff.", &root, &arena, &err), TL_E_CORRUPT, "string longer than the input");
	is_int(LOAD("\x80\x02X\x02\x00\x00\x00\xc0\xaf.", &root, &arena, &err), TL_E_CORRUPT, "overlong UTF-8");
	is_int(LOAD("\x80\x02\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x01.", &root, &arena, &err), TL_E_UNSUPPORTED,
		   "integer over 64 bits");
	is_int(LOAD("\x80\x02Ns.", &root, &arena, &err), TL_E_CORRUPT, "SETITEM with too few items");
	is_int(LOAD("\x80\x02]NNs.", &root, &arena, &err), TL_E_CORRUPT, "SETITEM on a list");
	is_int(LOAD("\x80\x02}(Nu.", &root, &arena, &err), TL_E_CORRUPT, "SETITEMS with an odd count");
	is_int(LOAD("\x80\x02(}Nu.", &root, &arena, &err), TL_E_CORRUPT, "SETITEMS whose dict is below its MARK");
	is_int(LOAD("\x80\x02" "(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x00" "0X\x03\x00\x00\x00" "cpuJ\xff\xff\xff\xfftQ.",
				&root, &arena, &err), TL_E_CORRUPT, "storage with a negative size");
}

static void
test_resource_bounds(void)
{
	tl_pickle  *arena = NULL;
	pk_obj	   *root = NULL;
	tl_error	err;
	size_t		n = 1200000,
				len = 0;
	uint8_t    *buf = malloc(3 * n + 16);

	/* None, [] then (BINGET None, APPEND) repeated: 8 bytes of pointers per 3 input bytes, bounded in total */
	memcpy(buf, "\x80\x02Nq\x01]q\x00", 8);
	len = 8;
	for (size_t i = 0; i < n / 2; i++)
	{
		memcpy(buf + len, "h\x01" "a", 3);
		len += 3;
	}
	buf[len++] = '.';
	is_int(load(buf, len, &root, &arena, &err), TL_E_CORRUPT, "600k appends read to the end: %s", err.message);
	ok(strstr(err.message, "STOP") != NULL, "(only STOP fails: the None is still on the stack)");
	len = 8;
	for (size_t i = 0; i < n; i++)
	{
		memcpy(buf + len, "h\x01" "a", 3);
		len += 3;
	}
	buf[len++] = '.';
	is_int(load(buf, len, &root, &arena, &err), TL_E_LIMIT, "1.2M container items: %s", err.message);
	ok(strstr(err.message, "items") != NULL, "refused by the item budget");

	/* a dict with 400k pairs under one key is read through (no quadratic key search) */
	memcpy(buf, "\x80\x02Nq\x01X\x01\x00\x00\x00kq\x00}(", 15);
	len = 15;
	for (int i = 0; i < 400000; i++)
	{
		memcpy(buf + len, "h\x00h\x01", 4);
		len += 4;
	}
	memcpy(buf + len, "u.", 2);
	len += 2;
	is_int(load(buf, len, &root, &arena, &err), TL_E_CORRUPT, "400k repeated keys read to the end: %s",
		   err.message);
	ok(strstr(err.message, "STOP") != NULL, "(only STOP fails: None and the key are still on the stack)");
	free(buf);
}

int
main(void)
{
	test_values();
	test_refusals();
	test_resource_bounds();
	return tap_done();
}
