/* Shared by the unit test programs: the cmocka include dance and a reset of
 * the XML report, which cmocka will not overwrite (it prints to stderr
 * instead when the file exists, leaving a stale report behind). */
#ifndef INBOXFS_UNIT_H
#define INBOXFS_UNIT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

static inline void unit_xml_reset(void)
{
	const char *xml = getenv("CMOCKA_XML_FILE");

	if (xml != NULL && *xml != '\0')
		unlink(xml);
}

#endif
