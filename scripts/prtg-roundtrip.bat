@echo off
rem prtg-roundtrip launcher for PRTG's EXE/Script Advanced sensor: copy it into
rem "<PRTG program dir>\Custom Sensors\EXEXML" and choose it as the sensor's EXE/Script.
rem It finds the Python that has the prtg_roundtrip package and runs
rem "python -m prtg_roundtrip PARAMETERS", the Parameters field passed on as typed.
rem (No percent signs in these comments: cmd.exe expands them even in REM lines.)
rem
rem Where it looks, in this order (docs\launchers.md):
rem   0. the environment variable PRTG_ROUNDTRIP_PYTHON: a python.exe; when set, the only one
rem   1. a virtual environment in this launcher's folder: .venv\Scripts\python.exe, then
rem      prtg-roundtrip-venv\Scripts\python.exe
rem   2. an installed prtg-roundtrip.exe on PATH
rem   3. PRTG's bundled Python (in ProgramFiles(x86), then in ProgramFiles:
rem      PRTG Network Monitor\python\python.exe), if prtg-roundtrip is installed in it
rem   4. python.exe on PATH, if prtg-roundtrip is installed in it
rem If none is found it prints a PRTG error document naming the places it looked (XML; JSON
rem with --format prtg-json; Script v2 JSON with --format script-v2 or, without --format, when it
rem runs from "Custom Sensors\scripts" as the Script v2 sensor's launcher) and exits 0.
rem
rem Delayed expansion stays off while the parameters are handled, so "!" and "^" in quoted
rem values arrive unchanged. The code uses GOTO instead of ( ) blocks, because folder names like
rem "Program Files (x86)" would end a block early.
setlocal EnableExtensions DisableDelayedExpansion
set "PYTHONIOENCODING=utf-8"
set "PYTHONUTF8=1"
set "PYTHONSAFEPATH=1"
set "PRTG_RT_HERE=%~dp0"
set "PRTG_RT_LOOKED="
set "PRTG_RT_SEP="
set "PRTG_RT_EXE="
set "PRTG_RT_CHECK=import importlib.metadata as m; m.distribution('prtg-roundtrip')"
rem In "Custom Sensors\scripts" only the Script v2 sensor runs this launcher: it passes the
rem Parameters field on stdin. Tell the sensor so explicitly (it never guesses from an empty
rem command line).
for %%I in ("%PRTG_RT_HERE%.") do if /i "%%~nxI"=="scripts" set "PRTG_ROUNDTRIP_SCRIPT_V2=1"

if not defined PRTG_ROUNDTRIP_PYTHON goto venvs
rem Quotes around the value (set PRTG_ROUNDTRIP_PYTHON="C:\...") are dropped.
set "PRTG_RT_PY=%PRTG_ROUNDTRIP_PYTHON:"=%"
if exist "%PRTG_RT_PY%" goto run
set "PRTG_RT_LOOKED=PRTG_ROUNDTRIP_PYTHON=%PRTG_RT_PY% (no such file; it overrides all other places)"
goto nopython

:venvs
set "PRTG_RT_PY=%PRTG_RT_HERE%.venv\Scripts\python.exe"
if exist "%PRTG_RT_PY%" goto run
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY%"
set "PRTG_RT_SEP=; "
set "PRTG_RT_PY=%PRTG_RT_HERE%prtg-roundtrip-venv\Scripts\python.exe"
if exist "%PRTG_RT_PY%" goto run
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY%"
set "PRTG_RT_SEP=; "

for %%I in (prtg-roundtrip.exe) do set "PRTG_RT_EXE=%%~$PATH:I"
if defined PRTG_RT_EXE goto runexe
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%prtg-roundtrip.exe on PATH"
set "PRTG_RT_SEP=; "

if not defined ProgramFiles(x86) goto bundled64
set "PRTG_RT_PY=%ProgramFiles(x86)%\PRTG Network Monitor\python\python.exe"
call :check
if not errorlevel 1 goto run
:bundled64
set "PRTG_RT_PY=%ProgramFiles%\PRTG Network Monitor\python\python.exe"
call :check
if not errorlevel 1 goto run

set "PRTG_RT_PY="
for %%I in (python.exe) do set "PRTG_RT_PY=%%~$PATH:I"
if not defined PRTG_RT_PY goto nopath
call :check
if not errorlevel 1 goto run
goto nopython
:nopath
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%python.exe on PATH"
set "PRTG_RT_SEP=; "
goto nopython

:run
"%PRTG_RT_PY%" -m prtg_roundtrip %*
exit /b %ERRORLEVEL%

:runexe
"%PRTG_RT_EXE%" %*
exit /b %ERRORLEVEL%

:check
rem errorlevel 0 when PRTG_RT_PY exists and has prtg-roundtrip installed; else notes it.
if exist "%PRTG_RT_PY%" goto checkimport
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY%"
set "PRTG_RT_SEP=; "
exit /b 1
:checkimport
pushd "%SystemRoot%" 2>nul
"%PRTG_RT_PY%" -c "%PRTG_RT_CHECK%" >nul 2>&1
set "PRTG_RT_RC=%ERRORLEVEL%"
popd
if "%PRTG_RT_RC%"=="0" exit /b 0
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY% (prtg-roundtrip is not installed in it)"
set "PRTG_RT_SEP=; "
exit /b 1

:nopython
rem The format is read as the package reads it: the first --format value that is a known one;
rem without one, Script v2's where this launcher runs as Script v2 (the marker set above), else
rem XML. (cmd splits "--format=prtg-json" into two parameters.)
set "PRTG_RT_FMT=prtg-xml"
if defined PRTG_ROUNDTRIP_SCRIPT_V2 set "PRTG_RT_FMT=script-v2"
set "PRTG_RT_PREV="
:scan
if [%1]==[] goto scanned
if not "%PRTG_RT_PREV%"=="--format" goto next
if "%~1"=="prtg-xml" goto scanned
if "%~1"=="text" set "PRTG_RT_FMT=text"
if "%~1"=="text" goto scanned
if "%~1"=="prtg-json" set "PRTG_RT_FMT=prtg-json"
if "%~1"=="prtg-json" goto scanned
if "%~1"=="script-v2" set "PRTG_RT_FMT=script-v2"
if "%~1"=="script-v2" goto scanned
:next
set "PRTG_RT_PREV=%~1"
shift
goto scan
:scanned
rem Built with percent expansion inside quoted SET commands (safe: no value holds a quote),
rem printed with delayed expansion, which does not parse the value again.
set "M=prtg-roundtrip launcher: no Python found (looked in: %PRTG_RT_LOOKED%). Install prtg-roundtrip into a virtual environment next to this launcher (%PRTG_RT_HERE%prtg-roundtrip-venv, e.g. offline from the bundle: python -m venv prtg-roundtrip-venv, then prtg-roundtrip-venv\Scripts\python.exe -m pip install --no-index --find-links wheels prtg-roundtrip), or set PRTG_ROUNDTRIP_PYTHON. See docs\launchers.md."
chcp 65001 >nul 2>&1
if "%PRTG_RT_FMT%"=="text" goto say_text
if "%PRTG_RT_FMT%"=="prtg-json" goto say_json
if "%PRTG_RT_FMT%"=="script-v2" goto say_json
set "M=%M:&=&amp;%"
set "M=%M:<=&lt;%"
set "M=%M:>=&gt;%"
setlocal EnableDelayedExpansion
echo ^<?xml version="1.0" encoding="UTF-8"?^>^<prtg^>^<error^>1^</error^>^<text^>!M!^</text^>^</prtg^>
exit /b 0
:say_json
set "M=%M:\=\\%"
setlocal EnableDelayedExpansion
if "!PRTG_RT_FMT!"=="script-v2" goto say_v2
echo {"prtg": {"error": 1, "text": "!M!"}}
exit /b 0
:say_v2
echo {"version": 2, "status": "error", "message": "!M!"}
exit /b 0
:say_text
setlocal EnableDelayedExpansion
echo !M!
exit /b 1
