# SPDX-License-Identifier: MIT
# The web page in Debian's Chromium (headless) against the real `imgsearch
# serve` with the tiny model: tests/browser/ui_test.mjs (playwright-core, no
# browser download). playwright-core is installed with `npm ci` from the
# committed package-lock.json into tests/browser/node_modules (gitignored)
# when missing. Screenshots land in <build>/artifacts/. it_browser_filters:
# tests/browser/filters_test.mjs (filters, near-duplicates, tags; issue 10).
find_program(IMS_NODE node)
find_program(IMS_NPM npm)
find_program(IMS_CHROMIUM chromium)
if(TARGET imgsearch AND IMS_NODE AND IMS_NPM AND IMS_CHROMIUM)
  add_test(NAME it_browser
           COMMAND sh -c "cd \"$1\" && { [ -d node_modules/playwright-core ] || \"$2\" ci --no-audit --no-fund --loglevel=error; } && IMS_CHROMIUM=\"$3\" \"$4\" ui_test.mjs \"$5\" \"$6\" \"$7\""
                   it_browser ${CMAKE_SOURCE_DIR}/tests/browser ${IMS_NPM} ${IMS_CHROMIUM}
                   ${IMS_NODE} $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR}
                   ${CMAKE_BINARY_DIR}/artifacts)
  set_tests_properties(it_browser PROPERTIES LABELS integration TIMEOUT 400
                       RESOURCE_LOCK browser_npm)
  # the search filters, near-duplicates and tags (issue 10): filters_test.mjs
  add_test(NAME it_browser_filters
           COMMAND sh -c "cd \"$1\" && { [ -d node_modules/playwright-core ] || \"$2\" ci --no-audit --no-fund --loglevel=error; } && IMS_CHROMIUM=\"$3\" \"$4\" filters_test.mjs \"$5\" \"$6\" \"$7\""
                   it_browser_filters ${CMAKE_SOURCE_DIR}/tests/browser ${IMS_NPM} ${IMS_CHROMIUM}
                   ${IMS_NODE} $<TARGET_FILE:imgsearch> ${CMAKE_SOURCE_DIR}
                   ${CMAKE_BINARY_DIR}/artifacts)
  set_tests_properties(it_browser_filters PROPERTIES LABELS integration TIMEOUT 400
                       RESOURCE_LOCK browser_npm)
endif()
