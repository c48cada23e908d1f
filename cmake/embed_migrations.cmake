# Writes a C++ source defining the migrations as (version, name, sql) triples.
# Invoked with -DOUT=<file> "-DSOURCES=<a.sql;b.sql>" (a CMake list, so a
# path may hold spaces).
set(body "// Generated from migrations/*.sql by cmake/embed_migrations.cmake.\n")
string(APPEND body "#include \"store/migrations_data.h\"\n\nnamespace taskmill::store {\n")
string(APPEND body "const std::vector<EmbeddedMigration>& EmbeddedMigrations() {\n")
string(APPEND body "  static const std::vector<EmbeddedMigration> kMigrations = {\n")
foreach(src ${SOURCES})
  get_filename_component(name ${src} NAME_WE)
  string(REGEX MATCH "^[0-9]+" version "${name}")
  math(EXPR version "${version}")
  file(READ ${src} sql)
  string(APPEND body "    {${version}, \"${name}\", R\"taskmill_sql(${sql})taskmill_sql\"},\n")
endforeach()
string(APPEND body "  };\n  return kMigrations;\n}\n}  // namespace taskmill::store\n")
file(WRITE ${OUT}.tmp "${body}")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
