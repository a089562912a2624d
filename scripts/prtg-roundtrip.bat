@echo off
rem prtg-roundtrip launcher for PRTG's EXE/Script Advanced sensor: copy it into
rem "<PRTG program dir>\Custom Sensors\EXEXML" and choose it as the sensor's EXE/Script.
rem It finds a Python and runs "python -m prtg_roundtrip PARAMETERS" (the installed package) or
rem "python -S prtg-roundtrip.pyz PARAMETERS" (the single file next to this launcher; -S: it needs
rem nothing from site-packages, so that Python's site-packages cost no start-up time), the
rem Parameters field passed on as typed.
rem (No percent signs in these comments: cmd.exe expands them even in REM lines.)
rem
rem Where it looks, in this order (docs\launchers.md):
rem   0. the environment variable PRTG_ROUNDTRIP_PYTHON: a python.exe; when set, the only one
rem   1. a virtual environment in this launcher's folder: .venv\Scripts\python.exe, then
rem      prtg-roundtrip-venv\Scripts\python.exe
rem   2. an installed prtg-roundtrip.exe on PATH
rem   3. PRTG's own Python: ..\..\python\python.exe from this launcher's folder (Custom
rem      Sensors\EXEXML), then python\python.exe in the PRTG folder the registry names
rem      (HKLM\SOFTWARE\WOW6432Node\Paessler\PRTG Network Monitor, value exepath), then
rem      PRTG Network Monitor\python\python.exe in ProgramFiles(x86) and in ProgramFiles
rem   4. py.exe -3 on PATH, then python.exe on PATH
rem Steps 0 and 3-4 run the installed package if the interpreter has it, else the single file
rem prtg-roundtrip.pyz next to this launcher; an interpreter with neither is skipped (step 0:
rem run as it is).
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
set "PRTG_RT_PYZ=%~dp0prtg-roundtrip.pyz"
set "PRTG_RT_LOOKED="
set "PRTG_RT_SEP="
set "PRTG_RT_EXE="
set "PRTG_RT_PYARGS="
set "PRTG_RT_CHECK=import importlib.metadata as m; m.distribution('prtg-roundtrip')"
rem In "Custom Sensors\scripts" only the Script v2 sensor runs this launcher: it passes the
rem Parameters field on stdin. Tell the sensor so explicitly (it never guesses from an empty
rem command line).
for %%I in ("%PRTG_RT_HERE%.") do if /i "%%~nxI"=="scripts" set "PRTG_ROUNDTRIP_SCRIPT_V2=1"

if not defined PRTG_ROUNDTRIP_PYTHON goto venvs
rem Quotes around the value (set PRTG_ROUNDTRIP_PYTHON="C:\...") are dropped.
set "PRTG_RT_PY=%PRTG_ROUNDTRIP_PYTHON:"=%"
if not exist "%PRTG_RT_PY%" goto badoverride
call :check
if not errorlevel 1 goto run
if exist "%PRTG_RT_PYZ%" goto runpyz
goto run
:badoverride
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

rem PRTG's own Python, relative to this launcher (Custom Sensors\EXEXML).
for %%I in ("%PRTG_RT_HERE%..\..\python\python.exe") do set "PRTG_RT_PY=%%~fI"
call :try
if not errorlevel 1 goto found

rem The PRTG folder the registry names (a 32-bit program: WOW6432Node on 64-bit Windows).
set "PRTG_RT_REG="
for /f "tokens=1,2,*" %%A in ('reg query "HKLM\SOFTWARE\WOW6432Node\Paessler\PRTG Network Monitor" /v exepath 2^>nul') do if /i "%%A"=="exepath" set "PRTG_RT_REG=%%C"
if defined PRTG_RT_REG goto registered
for /f "tokens=1,2,*" %%A in ('reg query "HKLM\SOFTWARE\Paessler\PRTG Network Monitor" /v exepath 2^>nul') do if /i "%%A"=="exepath" set "PRTG_RT_REG=%%C"
if not defined PRTG_RT_REG goto programfiles
:registered
if "%PRTG_RT_REG:~-1%"=="\" set "PRTG_RT_REG=%PRTG_RT_REG:~0,-1%"
set "PRTG_RT_PY=%PRTG_RT_REG%\python\python.exe"
call :try
if not errorlevel 1 goto found

:programfiles
if not defined ProgramFiles(x86) goto bundled64
set "PRTG_RT_PY=%ProgramFiles(x86)%\PRTG Network Monitor\python\python.exe"
call :try
if not errorlevel 1 goto found
:bundled64
set "PRTG_RT_PY=%ProgramFiles%\PRTG Network Monitor\python\python.exe"
call :try
if not errorlevel 1 goto found

rem The Python launcher (py.exe -3), then python.exe, on PATH.
set "PRTG_RT_PY="
for %%I in (py.exe) do set "PRTG_RT_PY=%%~$PATH:I"
if not defined PRTG_RT_PY goto nopy
set "PRTG_RT_PYARGS=-3 "
call :try
if not errorlevel 1 goto found
set "PRTG_RT_PYARGS="
goto pathpython
:nopy
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%py.exe on PATH"
set "PRTG_RT_SEP=; "
:pathpython
set "PRTG_RT_PY="
for %%I in (python.exe) do set "PRTG_RT_PY=%%~$PATH:I"
if not defined PRTG_RT_PY goto nopath
call :try
if not errorlevel 1 goto found
goto nopython
:nopath
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%python.exe on PATH"
set "PRTG_RT_SEP=; "
goto nopython

:found
if "%PRTG_RT_USE%"=="pyz" goto runpyz
:run
"%PRTG_RT_PY%" %PRTG_RT_PYARGS%-m prtg_roundtrip %*
exit /b %ERRORLEVEL%

:runpyz
"%PRTG_RT_PY%" %PRTG_RT_PYARGS%-S "%PRTG_RT_PYZ%" %*
exit /b %ERRORLEVEL%

:runexe
"%PRTG_RT_EXE%" %*
exit /b %ERRORLEVEL%

:try
rem errorlevel 0 when PRTG_RT_PY exists and has prtg-roundtrip installed (PRTG_RT_USE=package)
rem or prtg-roundtrip.pyz lies next to this launcher (PRTG_RT_USE=pyz); else notes it.
set "PRTG_RT_USE="
if exist "%PRTG_RT_PY%" goto tryimport
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY%"
set "PRTG_RT_SEP=; "
exit /b 1
:tryimport
call :check
if errorlevel 1 goto trypyz
set "PRTG_RT_USE=package"
exit /b 0
:trypyz
if not exist "%PRTG_RT_PYZ%" goto trynone
set "PRTG_RT_USE=pyz"
exit /b 0
:trynone
set "PRTG_RT_LOOKED=%PRTG_RT_LOOKED%%PRTG_RT_SEP%%PRTG_RT_PY% (prtg-roundtrip is not installed in it)"
set "PRTG_RT_SEP=; "
exit /b 1

:check
rem errorlevel 0 when PRTG_RT_PY has prtg-roundtrip installed.
pushd "%SystemRoot%" 2>nul
"%PRTG_RT_PY%" %PRTG_RT_PYARGS%-c "%PRTG_RT_CHECK%" >nul 2>&1
set "PRTG_RT_RC=%ERRORLEVEL%"
popd
if "%PRTG_RT_RC%"=="0" exit /b 0
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
set "M=prtg-roundtrip launcher: no Python found (looked in: %PRTG_RT_LOOKED%). Put prtg-roundtrip.pyz next to this launcher (it runs with PRTG's own Python or any Python 3.9+), or install prtg-roundtrip into a virtual environment next to this launcher (%PRTG_RT_HERE%prtg-roundtrip-venv, e.g. offline from the bundle: python -m venv prtg-roundtrip-venv, then prtg-roundtrip-venv\Scripts\python.exe -m pip install --no-index --find-links wheels prtg-roundtrip), or set PRTG_ROUNDTRIP_PYTHON. See docs\launchers.md."
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
